//! TPM2_MakeCredential in software: the verifier's half of proving that an attestation key
//! lives in the same TPM as an endorsement key (TPM 2.0 Library Part 1, "Protected
//! Storage" / "Credential Protection"; Part 3, TPM2_MakeCredential).
//!
//! ```text
//! seed        = 32 random bytes                        (digest size of the EK's nameAlg)
//! encSecret   = RSA-OAEP-SHA256(EK, seed, label "IDENTITY\0")
//! symKey      = KDFa(SHA256, seed, "STORAGE",   name(AK), -, 128)
//! encIdentity = AES-128-CFB(symKey, iv = 0, TPM2B_DIGEST(secret))
//! hmacKey     = KDFa(SHA256, seed, "INTEGRITY", -,        -, 256)
//! outerHMAC   = HMAC-SHA256(hmacKey, encIdentity ‖ name(AK))
//! idObject    = TPM2B_DIGEST(outerHMAC) ‖ encIdentity
//! ```
//!
//! Only the TPM holding the EK's private key recovers `seed`, and it releases `secret`
//! (TPM2_ActivateCredential) only if the key named `name(AK)` is loaded in it. The outputs
//! are the *contents* of `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`, which is what
//! `strata_agent::tpm::Tpm::activate_credential` takes.
//!
//! Supported EKs: RSA (2048 bits or more) with nameAlg SHA-256 and an AES-128-CFB storage
//! symmetric, i.e. the TCG default template L-1 and high-range H-1.

use aes::cipher::KeyIvInit as _;
use ring::rand::SecureRandom;
use rsa::sha2::Sha256;

use crate::hash::HashAlg;
use crate::tpm::{Public, PublicKey, alg, attr};

/// Why a credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The EK is not a key this implementation can encrypt to.
    #[error("unsupported endorsement key: {reason}")]
    UnsupportedEk {
        /// Why.
        reason: String,
    },
    /// The AK name is not `nameAlg ‖ digest`.
    #[error("invalid attestation key name: {reason}")]
    AkName {
        /// Why.
        reason: String,
    },
    /// The secret does not fit a TPM2B_DIGEST of the EK's nameAlg.
    #[error("the credential secret is {len} bytes; it must be 1 to 32 bytes")]
    SecretLength {
        /// Its length.
        len: usize,
    },
    /// The random number generator failed.
    #[error("the random number generator failed")]
    Rng,
    /// RSA-OAEP encryption failed.
    #[error("rsa-oaep encryption to the endorsement key failed: {reason}")]
    Rsa {
        /// Why.
        reason: String,
    },
}

const SEED_LEN: usize = 32;

/// TPM2_MakeCredential: seals `secret` to `ek_public` and the key name `ak_name`
/// (`TPM2B_NAME` contents). Returns the `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`
/// contents.
pub fn make_credential(
    ek_public: &Public,
    ak_name: &[u8],
    secret: &[u8],
    rng: &dyn SecureRandom,
) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let rsa_key = check_ek(ek_public)?;
    check_name(ak_name)?;
    if secret.is_empty() || secret.len() > HashAlg::Sha256.digest_len() {
        return Err(CredentialError::SecretLength { len: secret.len() });
    }
    let mut seed = [0u8; SEED_LEN];
    rng.fill(&mut seed).map_err(|_| CredentialError::Rng)?;

    let mut rng = RingRng(rng);
    let encrypted_secret = rsa_key
        .encrypt(
            &mut rng,
            rsa::Oaep::<Sha256>::new_with_label(&b"IDENTITY\0"[..]),
            &seed,
        )
        .map_err(|e| CredentialError::Rsa {
            reason: e.to_string(),
        })?;

    let sym_key = kdfa(&seed, b"STORAGE\0", ak_name, 128);
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    enc_identity.extend_from_slice(&(secret.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(secret);
    let key: [u8; 16] = sym_key
        .get(..16)
        .and_then(|k| k.try_into().ok())
        .unwrap_or_default();
    cfb_mode::Encryptor::<aes::Aes128>::new(&key.into(), &[0u8; 16].into())
        .encrypt(&mut enc_identity);

    let hmac_key = kdfa(&seed, b"INTEGRITY\0", &[], 256);
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &hmac_key);
    let mut ctx = ring::hmac::Context::with_key(&mac);
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer = ctx.sign();

    let mut id_object = Vec::with_capacity(2 + 32 + enc_identity.len());
    id_object.extend_from_slice(&(outer.as_ref().len() as u16).to_be_bytes());
    id_object.extend_from_slice(outer.as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok((id_object, encrypted_secret))
}

fn unsupported(reason: impl Into<String>) -> CredentialError {
    CredentialError::UnsupportedEk {
        reason: reason.into(),
    }
}

fn check_ek(ek: &Public) -> Result<rsa::PublicKey, CredentialError> {
    let PublicKey::Rsa(k) = &ek.key else {
        return Err(unsupported("only rsa endorsement keys are supported"));
    };
    if ek.name_alg != HashAlg::Sha256 {
        return Err(unsupported(format!(
            "name algorithm {} (only sha256 is supported)",
            ek.name_alg
        )));
    }
    if !ek.has_attributes(attr::RESTRICTED | attr::DECRYPT) || ek.has_attributes(attr::SIGN_ENCRYPT)
    {
        return Err(unsupported(format!(
            "attributes {:#010x} are not those of a restricted decryption key",
            ek.attributes
        )));
    }
    match k.symmetric {
        Some(s) if s.algorithm == alg::AES && s.key_bits == 128 && s.mode == alg::CFB => {}
        other => {
            return Err(unsupported(format!(
                "storage symmetric {other:?} (only aes-128-cfb is supported)"
            )));
        }
    }
    let bits = u32::try_from(k.modulus.len() * 8).unwrap_or(u32::MAX);
    if u32::from(k.key_bits) != bits || bits < 2048 {
        return Err(unsupported(format!(
            "modulus of {} bytes for a {}-bit key (at least 2048 bits are required)",
            k.modulus.len(),
            k.key_bits
        )));
    }
    let n = rsa::BoxedUint::from_be_slice(&k.modulus, bits)
        .map_err(|e| unsupported(format!("modulus: {e}")))?;
    let exponent = if k.exponent == 0 { 65_537 } else { k.exponent };
    rsa::PublicKey::new(n, rsa::BoxedUint::from(exponent))
        .map_err(|e| unsupported(format!("rsa key: {e}")))
}

fn check_name(name: &[u8]) -> Result<(), CredentialError> {
    let [hi, lo, digest @ ..] = name else {
        return Err(CredentialError::AkName {
            reason: format!("{} bytes is too short", name.len()),
        });
    };
    let id = u16::from_be_bytes([*hi, *lo]);
    match HashAlg::from_alg_id(id) {
        Some(h) if h.digest_len() == digest.len() => Ok(()),
        Some(h) => Err(CredentialError::AkName {
            reason: format!(
                "a {h} name needs {} digest bytes, not {}",
                h.digest_len(),
                digest.len()
            ),
        }),
        None => Err(CredentialError::AkName {
            reason: format!("unknown name algorithm {id:#06x}"),
        }),
    }
}

/// KDFa (SP 800-108 counter mode, HMAC-SHA256) as TPM 2.0 defines it:
/// `HMAC(key, i ‖ label ‖ context ‖ bits)` for `i = 1, 2, …`, truncated to `bits`.
/// `label` includes its terminating NUL.
pub(crate) fn kdfa(key: &[u8], label: &[u8], context: &[u8], bits: u32) -> Vec<u8> {
    let want = usize::try_from(bits / 8).unwrap_or(0);
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut out = Vec::with_capacity(want + 32);
    let mut counter = 1u32;
    while out.len() < want {
        let mut ctx = ring::hmac::Context::with_key(&mac);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(context);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

/// Lets the RSA crate draw its OAEP randomness from `ring`'s generator.
struct RingRng<'a>(&'a dyn SecureRandom);

#[derive(Debug)]
struct RngFailed;

impl std::fmt::Display for RngFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the random number generator failed")
    }
}

impl std::error::Error for RngFailed {}

impl rsa::rand_core::TryRng for RingRng<'_> {
    type Error = RngFailed;

    fn try_next_u32(&mut self) -> Result<u32, RngFailed> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngFailed> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngFailed> {
        self.0.fill(dst).map_err(|_| RngFailed)
    }
}

impl rsa::rand_core::TryCryptoRng for RingRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::{AsymScheme, RsaPublic, SymDef};

    fn hex_bytes(s: &str) -> Vec<u8> {
        crate::Digest::from_hex(s.trim()).unwrap().0
    }

    /// The test RSA key as an EK (TCG template L-1 shape) and its private half.
    fn ek() -> (Public, rsa::PrivateKey) {
        let primes = include_str!("testdata/rsa2048.primes");
        let mut lines = primes.lines();
        let p = hex_bytes(lines.next().unwrap());
        let q = hex_bytes(lines.next().unwrap());
        let private = rsa::PrivateKey::from_p_q(
            rsa::BoxedUint::from_be_slice(&p, 1024).unwrap(),
            rsa::BoxedUint::from_be_slice(&q, 1024).unwrap(),
            rsa::BoxedUint::from(65_537u32),
        )
        .unwrap();
        use rsa::traits::PublicKeyParts as _;
        let modulus = private.n().to_be_bytes().to_vec();
        let public = Public {
            name_alg: HashAlg::Sha256,
            attributes: 0x0003_00b2,
            auth_policy: vec![0; 32],
            key: PublicKey::Rsa(RsaPublic {
                symmetric: Some(SymDef {
                    algorithm: alg::AES,
                    key_bits: 128,
                    mode: alg::CFB,
                }),
                scheme: AsymScheme::Null,
                key_bits: 2048,
                exponent: 0,
                modulus,
            }),
        };
        (public, private)
    }

    /// What TPM2_ActivateCredential does, for checking the structure (the real TPM check is
    /// the strata-agent swtpm test).
    fn activate(private: &rsa::PrivateKey, name: &[u8], id: &[u8], enc: &[u8]) -> Option<Vec<u8>> {
        use aes::cipher::KeyIvInit as _;
        let seed = private
            .decrypt(rsa::Oaep::<Sha256>::new_with_label(&b"IDENTITY\0"[..]), enc)
            .ok()?;
        let (hmac_len, rest) = id.split_at(2);
        let (outer, enc_identity) =
            rest.split_at(usize::from(u16::from_be_bytes([hmac_len[0], hmac_len[1]])));
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &kdfa(&seed, b"INTEGRITY\0", &[], 256),
        );
        ring::hmac::verify(&key, &[enc_identity, name].concat(), outer).ok()?;
        let sym: [u8; 16] = kdfa(&seed, b"STORAGE\0", name, 128).try_into().ok()?;
        let mut plain = enc_identity.to_vec();
        cfb_mode::Decryptor::<aes::Aes128>::new(&sym.into(), &[0u8; 16].into()).decrypt(&mut plain);
        let n = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
        Some(plain[2..2 + n].to_vec())
    }

    fn name(byte: u8) -> Vec<u8> {
        [vec![0x00, 0x0b], vec![byte; 32]].concat()
    }

    #[test]
    fn the_holder_of_the_ek_recovers_the_secret_only_for_the_named_key() {
        let (ek, private) = ek();
        let rng = ring::rand::SystemRandom::new();
        let secret = b"0123456789abcdef0123456789abcdef";
        let (id, enc) = make_credential(&ek, &name(1), secret, &rng).unwrap();
        assert_eq!(enc.len(), 256);
        assert_eq!(id.len(), 2 + 32 + 2 + secret.len());
        assert_eq!(&id[..2], &[0, 32]);
        assert_eq!(
            activate(&private, &name(1), &id, &enc).as_deref(),
            Some(&secret[..])
        );
        assert_eq!(
            activate(&private, &name(2), &id, &enc),
            None,
            "other key name"
        );
        // Fresh randomness every time.
        let (id2, enc2) = make_credential(&ek, &name(1), secret, &rng).unwrap();
        assert_ne!((id2, enc2), (id, enc));
    }

    #[test]
    fn kdfa_counts_blocks_and_truncates() {
        let k = kdfa(b"seed", b"STORAGE\0", b"ctx", 128);
        assert_eq!(k.len(), 16);
        let long = kdfa(b"seed", b"STORAGE\0", b"ctx", 512);
        assert_eq!(long.len(), 64);
        // Block 1 of a 512-bit run differs from a 128-bit run (bits are in the input).
        assert_ne!(&long[..16], k.as_slice());
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"seed");
        let block1 = ring::hmac::sign(
            &mac,
            &[
                &1u32.to_be_bytes()[..],
                b"STORAGE\0",
                b"ctx",
                &128u32.to_be_bytes(),
            ]
            .concat(),
        );
        assert_eq!(&block1.as_ref()[..16], k.as_slice());
    }

    #[test]
    fn unsupported_inputs_are_refused() {
        let rng = ring::rand::SystemRandom::new();
        let (ek, _) = ek();
        let err = |ek: &Public, name: &[u8], secret: &[u8]| {
            make_credential(ek, name, secret, &rng).unwrap_err()
        };
        assert_eq!(
            err(&ek, &name(1), &[]),
            CredentialError::SecretLength { len: 0 }
        );
        assert_eq!(
            err(&ek, &name(1), &[0; 33]),
            CredentialError::SecretLength { len: 33 }
        );
        assert!(matches!(
            err(&ek, &[0, 0x0b, 1], b"s"),
            CredentialError::AkName { .. }
        ));
        assert!(matches!(
            err(&ek, &[0x12, 0x34, 1], b"s"),
            CredentialError::AkName { .. }
        ));
        assert!(matches!(
            err(&ek, &[0], b"s"),
            CredentialError::AkName { .. }
        ));
        let ak = crate::testkit::SoftKey::ecc().public();
        assert!(matches!(
            err(&ak, &name(1), b"s"),
            CredentialError::UnsupportedEk { .. }
        ));
        let mut signing = ek.clone();
        signing.attributes = crate::testkit::AK_ATTRIBUTES;
        assert!(matches!(
            err(&signing, &name(1), b"s"),
            CredentialError::UnsupportedEk { .. }
        ));
        let mut aes256 = ek.clone();
        if let PublicKey::Rsa(k) = &mut aes256.key {
            k.symmetric = Some(SymDef {
                algorithm: alg::AES,
                key_bits: 256,
                mode: alg::CFB,
            });
        }
        assert!(matches!(
            err(&aes256, &name(1), b"s"),
            CredentialError::UnsupportedEk { .. }
        ));
        let mut short = ek;
        if let PublicKey::Rsa(k) = &mut short.key {
            k.modulus.truncate(128);
        }
        assert!(matches!(
            err(&short, &name(1), b"s"),
            CredentialError::UnsupportedEk { .. }
        ));
    }
}
