//! The host agent's access to its TPM, through `tss-esapi`.
//!
//! [`Tpm`] wraps one ESAPI context opened from a TCTI configuration string
//! (`device:/dev/tpmrm0` on hardware, `swtpm:host=127.0.0.1,port=N` against a software TPM).
//! Everything that crosses this module's boundary is plain bytes in TPM wire format, so the
//! verifier side (`strata-attest`) never needs `tss-esapi`:
//!
//! | value | wire format |
//! |---|---|
//! | EK / AK public | marshalled `TPM2B_PUBLIC` (with its 2-byte size) |
//! | AK name | `TPM2B_NAME` contents: `nameAlg (2 bytes) ‖ H(TPMT_PUBLIC)` |
//! | AK private blob | `TPM2B_PRIVATE` contents (without the size) |
//! | credential blob / encrypted secret | `TPM2B_ID_OBJECT` / `TPM2B_ENCRYPTED_SECRET` contents |
//! | quote | marshalled `TPMS_ATTEST` and marshalled `TPMT_SIGNATURE` |
//!
//! Transient objects are flushed after every operation except the endorsement key, which is
//! created once per [`Tpm`] (it is derived deterministically from the endorsement seed and the
//! template, and creating an RSA primary is the slowest thing a TPM does) and flushed on drop.

use std::str::FromStr;

use tss_esapi::{
    Context, TctiNameConf,
    abstraction::{AsymmetricAlgorithmSelection, DefaultKey, ak, ek},
    attributes::SessionAttributesBuilder,
    constants::SessionType,
    handles::{AuthHandle, KeyHandle, ObjectHandle, PcrHandle, SessionHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm},
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        session_handles::{AuthSession, PolicySession},
    },
    structures::{
        Data, Digest, DigestValues, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot,
        Private, Public, PublicBuffer, SignatureScheme, SymmetricDefinition,
    },
    traits::{Marshall, UnMarshall},
};

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile, low range).
pub const RSA_EK_CERT_NV_INDEX: u32 = 0x01c0_0002;

/// Highest PCR index this module addresses (PC Client TPMs have 24 PCRs).
pub const MAX_PCR: u32 = 23;

/// What can go wrong talking to the TPM.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string did not parse.
    #[error("invalid tcti configuration {tcti:?}: use device:/dev/tpmrm0 or swtpm:host=H,port=P")]
    Tcti {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },
    /// The context could not be opened.
    #[error("cannot open the tpm through tcti {tcti:?}")]
    Open {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command (or the marshalling around it) failed.
    #[error("tpm operation {op} failed")]
    Command {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// A caller-supplied value was out of range or malformed.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The EK this TPM derives is not the EK the caller expected.
    #[error("the endorsement key of this tpm does not match the expected endorsement key")]
    EkMismatch,
}

pub(crate) fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { op, source }
}

/// A PCR bank the agent measures into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PcrBank {
    /// SHA-1 (TPM_ALG_SHA1, 0x0004).
    Sha1,
    /// SHA-256 (TPM_ALG_SHA256, 0x000B).
    Sha256,
}

impl PcrBank {
    /// Both banks, in the order the event log lists them.
    pub const ALL: [PcrBank; 2] = [PcrBank::Sha1, PcrBank::Sha256];

    /// The TPM_ALG_ID of the bank's hash.
    pub fn alg_id(self) -> u16 {
        match self {
            PcrBank::Sha1 => 0x0004,
            PcrBank::Sha256 => 0x000b,
        }
    }

    /// Digest size in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            PcrBank::Sha1 => 20,
            PcrBank::Sha256 => 32,
        }
    }

    /// Hash `data` with the bank's algorithm.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            PcrBank::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            PcrBank::Sha256 => &ring::digest::SHA256,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }

    fn hashing_algorithm(self) -> HashingAlgorithm {
        match self {
            PcrBank::Sha1 => HashingAlgorithm::Sha1,
            PcrBank::Sha256 => HashingAlgorithm::Sha256,
        }
    }
}

/// One digest per bank, as extended into a PCR.
pub type BankDigests = Vec<(PcrBank, Vec<u8>)>;

/// The algorithm of an attestation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AkAlgorithm {
    /// ECC NIST P-256, ECDSA with SHA-256 (the default: fast to create and to sign).
    #[default]
    EccP256,
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048,
}

/// The endorsement key (RSA-2048, TCG default template L-1) and its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndorsementKey {
    /// Marshalled `TPM2B_PUBLIC`.
    pub public: Vec<u8>,
    /// `TPM2B_NAME` contents (`0x000B ‖ SHA-256(TPMT_PUBLIC)`).
    pub name: Vec<u8>,
    /// The EK certificate (DER) from NV index 0x01c00002, when provisioned.
    pub certificate: Option<Vec<u8>>,
}

/// A restricted signing key under the endorsement hierarchy, as blobs the agent can store and
/// reload (the private blob is encrypted by the TPM under the EK; it is useless elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttestationKey {
    /// Key algorithm.
    pub algorithm: AkAlgorithm,
    /// Marshalled `TPM2B_PUBLIC`.
    pub public: Vec<u8>,
    /// `TPM2B_NAME` contents (`0x000B ‖ SHA-256(TPMT_PUBLIC)`).
    pub name: Vec<u8>,
    /// `TPM2B_NAME` contents of the qualified name (what a quote's `qualifiedSigner` holds):
    /// `0x000B ‖ SHA-256(QN(EK) ‖ name)` with `QN(EK) = 0x000B ‖ SHA-256(0x4000000B ‖ EK name)`.
    pub qualified_name: Vec<u8>,
    /// `TPM2B_PRIVATE` contents.
    pub private: Vec<u8>,
}

/// A TPM2_Quote result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled `TPMS_ATTEST` (the signed bytes).
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
}

/// An open TPM.
pub struct Tpm {
    ctx: Context,
    tcti: String,
    ek: Option<KeyHandle>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.tcti)
            .finish_non_exhaustive()
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        if let Some(ek) = self.ek.take()
            && let Err(e) = self.ctx.flush_context(ObjectHandle::from(ek))
        {
            tracing::warn!(error = %e, "could not flush the endorsement key");
        }
    }
}

impl Tpm {
    /// Opens the TPM behind a TCTI configuration string, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`. The TPM must already have been started up (the
    /// firmware does this on hardware; swtpm needs `--flags startup-clear`).
    pub fn open(tcti: &str) -> Result<Tpm, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::Tcti {
            tcti: tcti.to_owned(),
            source,
        })?;
        let ctx = Context::new(conf).map_err(|source| TpmError::Open {
            tcti: tcti.to_owned(),
            source,
        })?;
        Ok(Tpm {
            ctx,
            tcti: tcti.to_owned(),
            ek: None,
        })
    }

    /// The TCTI string this TPM was opened with.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The ESAPI context, for the other TPM users in this crate (`rootseal`).
    pub(crate) fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    fn ek_handle(&mut self) -> Result<KeyHandle, TpmError> {
        if let Some(ek) = self.ek {
            return Ok(ek);
        }
        let handle = ek::create_ek_object_2(
            &mut self.ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            DefaultKey,
        )
        .map_err(cmd("create endorsement key"))?;
        self.ek = Some(handle);
        Ok(handle)
    }

    /// Handles of the transient objects and loaded sessions currently in the TPM (for leak
    /// checks: swtpm has no resource manager, so anything not flushed stays there).
    pub fn loaded_handles(&mut self) -> Result<Vec<u32>, TpmError> {
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        let mut out = Vec::new();
        // TRANSIENT_FIRST, LOADED_SESSION_FIRST (HMAC), POLICY_SESSION_FIRST.
        for first in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
            let (caps, _) = self
                .ctx
                .get_capability(CapabilityType::Handles, first, 64)
                .map_err(cmd("list handles"))?;
            if let CapabilityData::Handles(list) = caps {
                out.extend(
                    list.iter()
                        .map(|h| u32::from(*h))
                        .filter(|h| h >> 24 == first >> 24),
                );
            }
        }
        Ok(out)
    }

    /// The RSA-2048 endorsement key from the TCG default template (L-1) and, when the TPM
    /// has one at NV index 0x01c00002, its certificate.
    pub fn endorsement_key(&mut self) -> Result<EndorsementKey, TpmError> {
        let handle = self.ek_handle()?;
        let (public, name, _) = self
            .ctx
            .read_public(handle)
            .map_err(cmd("read endorsement key"))?;
        let public = marshal_public(public)?;
        let certificate = self.read_ek_certificate()?;
        Ok(EndorsementKey {
            public,
            name: name.value().to_vec(),
            certificate,
        })
    }

    fn read_ek_certificate(&mut self) -> Result<Option<Vec<u8>>, TpmError> {
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        // Look before reading so that "no certificate" is not confused with a failure.
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::Handles, RSA_EK_CERT_NV_INDEX, 1)
            .map_err(cmd("list nv indices"))?;
        let present = match caps {
            CapabilityData::Handles(list) => {
                list.iter().any(|h| u32::from(*h) == RSA_EK_CERT_NV_INDEX)
            }
            _ => false,
        };
        if !present {
            return Ok(None);
        }
        let der = ek::retrieve_ek_pubcert(
            &mut self.ctx,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        )
        .map_err(cmd("read endorsement key certificate"))?;
        Ok(Some(trim_der(der)))
    }

    /// Creates a restricted signing key (the attestation key) under the endorsement
    /// hierarchy, with the EK as parent. Returns the blobs needed to reload it.
    pub fn create_attestation_key(
        &mut self,
        algorithm: AkAlgorithm,
    ) -> Result<AttestationKey, TpmError> {
        let ek = self.ek_handle()?;
        let (key_alg, scheme) = match algorithm {
            AkAlgorithm::EccP256 => (
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            AkAlgorithm::Rsa2048 => (
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
        };
        let created = ak::create_ak_2(
            &mut self.ctx,
            ek,
            HashingAlgorithm::Sha256,
            key_alg,
            scheme,
            None,
            DefaultKey,
        )
        .map_err(cmd("create attestation key"))?;
        let private = created.out_private.value().to_vec();
        let public = marshal_public(created.out_public)?;
        let mut key = AttestationKey {
            algorithm,
            public,
            name: Vec::new(),
            qualified_name: Vec::new(),
            private,
        };
        // Load it once: proves the blobs reload and gives the TPM-computed names.
        (key.name, key.qualified_name) = self.with_ak(&key, |ctx, handle| {
            let (_, name, qualified) = ctx
                .read_public(handle)
                .map_err(cmd("read attestation key"))?;
            Ok((name.value().to_vec(), qualified.value().to_vec()))
        })?;
        Ok(key)
    }

    /// Loads `ak` under the EK, runs `f`, and flushes the AK whatever `f` returned.
    fn with_ak<T>(
        &mut self,
        ak: &AttestationKey,
        f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let ek = self.ek_handle()?;
        let public = unmarshal_public(&ak.public)?;
        let private = Private::try_from(ak.private.clone()).map_err(|e| TpmError::Invalid {
            what: "attestation key private blob",
            reason: e.to_string(),
        })?;
        let handle = ak::load_ak(&mut self.ctx, ek, None, private, public)
            .map_err(cmd("load attestation key"))?;
        let out = f(&mut self.ctx, handle);
        let flushed = self
            .ctx
            .flush_context(ObjectHandle::from(handle))
            .map_err(cmd("flush attestation key"));
        let out = out?;
        flushed?;
        Ok(out)
    }

    /// TPM2_ActivateCredential: recovers the secret a verifier sealed to (EK, AK name) with
    /// MakeCredential. `ek` is what the verifier used; it must be this TPM's EK.
    /// `credential_blob` and `encrypted_secret` are the `TPM2B_ID_OBJECT` and
    /// `TPM2B_ENCRYPTED_SECRET` contents (a leading 2-byte size equal to the remaining
    /// length is accepted too).
    pub fn activate_credential(
        &mut self,
        ak: &AttestationKey,
        ek: &EndorsementKey,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let ek_handle = self.ek_handle()?;
        let (ours, _, _) = self
            .ctx
            .read_public(ek_handle)
            .map_err(cmd("read endorsement key"))?;
        if marshal_public(ours)? != ek.public {
            return Err(TpmError::EkMismatch);
        }
        let blob = IdObject::try_from(strip_tpm2b(credential_blob).to_vec()).map_err(|e| {
            TpmError::Invalid {
                what: "credential blob",
                reason: e.to_string(),
            }
        })?;
        let secret =
            EncryptedSecret::try_from(strip_tpm2b(encrypted_secret).to_vec()).map_err(|e| {
                TpmError::Invalid {
                    what: "encrypted secret",
                    reason: e.to_string(),
                }
            })?;
        self.with_ak(ak, |ctx, ak_handle| {
            let session = ek_policy_session(ctx)?;
            let result = ctx
                .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                    ctx.activate_credential(ak_handle, ek_handle, blob, secret)
                });
            let flushed = flush_session(ctx, session);
            let digest = result.map_err(cmd("activate credential"))?;
            flushed?;
            Ok(digest.value().to_vec())
        })
    }

    /// TPM2_MakeCredential computed by this TPM (a public-key operation; no secret of this
    /// TPM is used): seals `secret` to the EK `ek_public` (marshalled `TPM2B_PUBLIC`) and the
    /// key name `ak_name`. Returns the `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`
    /// contents. A stand-in for a software verifier; the control plane should use its own.
    pub fn make_credential(
        &mut self,
        ek_public: &[u8],
        ak_name: &[u8],
        secret: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        use tss_esapi::interface_types::resource_handles::Hierarchy;
        use tss_esapi::structures::Name;
        let public = unmarshal_public(ek_public)?;
        let name = Name::try_from(ak_name.to_vec()).map_err(|e| TpmError::Invalid {
            what: "key name",
            reason: e.to_string(),
        })?;
        let credential = Digest::try_from(secret.to_vec()).map_err(|e| TpmError::Invalid {
            what: "credential secret",
            reason: e.to_string(),
        })?;
        let handle = self
            .ctx
            .execute_without_session(|ctx| ctx.load_external_public(public, Hierarchy::Null))
            .map_err(cmd("load external public key"))?;
        let made = self
            .ctx
            .execute_without_session(|ctx| ctx.make_credential(handle, credential, name))
            .map_err(cmd("make credential"));
        let flushed = self
            .ctx
            .flush_context(ObjectHandle::from(handle))
            .map_err(cmd("flush external key"));
        let (blob, secret) = made?;
        flushed?;
        Ok((blob.value().to_vec(), secret.value().to_vec()))
    }

    /// TPM2_Quote over `pcrs` of the SHA-256 bank, signed by `ak`, with `nonce` as the
    /// qualifying data (at most 64 bytes).
    pub fn quote(
        &mut self,
        ak: &AttestationKey,
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<Quote, TpmError> {
        let data = Data::try_from(nonce.to_vec()).map_err(|_| TpmError::Invalid {
            what: "nonce",
            reason: format!("{} bytes; at most 64 are allowed", nonce.len()),
        })?;
        let slots = pcr_slots(pcrs)?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(cmd("build pcr selection"))?;
        self.with_ak(ak, |ctx, handle| {
            let (attest, signature) = ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.quote(handle, data, SignatureScheme::Null, selection)
                })
                .map_err(cmd("quote"))?;
            Ok(Quote {
                attest: attest.marshall().map_err(cmd("marshal attest"))?,
                signature: signature.marshall().map_err(cmd("marshal signature"))?,
            })
        })
    }

    /// Reads `pcrs` of one bank; returns `(index, value)` pairs in ascending index order.
    pub fn read_pcrs(
        &mut self,
        bank: PcrBank,
        pcrs: &[u32],
    ) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
        let mut wanted: Vec<u32> = pcrs.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = Vec::with_capacity(wanted.len());
        // TPM2_PCR_Read returns at most eight digests per call.
        for chunk in wanted.chunks(8) {
            let selection = PcrSelectionListBuilder::new()
                .with_selection(bank.hashing_algorithm(), &pcr_slots(chunk)?)
                .build()
                .map_err(cmd("build pcr selection"))?;
            let (_, read, digests) = self
                .ctx
                .execute_without_session(|ctx| ctx.pcr_read(selection))
                .map_err(cmd("read pcrs"))?;
            let read_slots: Vec<u32> = read
                .get_selections()
                .iter()
                .flat_map(|s| s.selected())
                .map(|slot| u32::from(slot).trailing_zeros())
                .collect();
            if read_slots != chunk || digests.len() != chunk.len() {
                return Err(TpmError::Invalid {
                    what: "pcr selection",
                    reason: format!(
                        "the tpm returned pcrs {read_slots:?} of bank {bank:?} for {chunk:?}; is the bank active?"
                    ),
                });
            }
            for (index, digest) in chunk.iter().zip(digests.value()) {
                out.push((*index, digest.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// TPM2_PCR_Extend of one PCR with one digest per bank.
    pub fn extend(&mut self, pcr: u32, digests: &[(PcrBank, Vec<u8>)]) -> Result<(), TpmError> {
        let handle = pcr_handle(pcr)?;
        let mut values = DigestValues::new();
        for (bank, digest) in digests {
            if digest.len() != bank.digest_len() {
                return Err(TpmError::Invalid {
                    what: "pcr digest",
                    reason: format!(
                        "{bank:?} digest is {} bytes; expected {}",
                        digest.len(),
                        bank.digest_len()
                    ),
                });
            }
            let d = Digest::try_from(digest.clone()).map_err(cmd("build digest"))?;
            values.set(bank.hashing_algorithm(), d);
        }
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.pcr_extend(handle, values)
            })
            .map_err(cmd("extend pcr"))
    }

    /// Measures `data` into `pcr` in both banks and returns the digests extended.
    ///
    /// tss-esapi 7.7 does not wrap TPM2_PCR_Event, so the agent hashes `data` itself and
    /// extends the digests with TPM2_PCR_Extend; for SHA-1 and SHA-256 the PCR ends up
    /// exactly where PCR_Event would leave it.
    pub fn pcr_event(&mut self, pcr: u32, data: &[u8]) -> Result<BankDigests, TpmError> {
        let digests: BankDigests = PcrBank::ALL.iter().map(|b| (*b, b.hash(data))).collect();
        self.extend(pcr, &digests)?;
        Ok(digests)
    }
}

/// The policy session the EK's authPolicy (PolicySecret on TPM_RH_ENDORSEMENT) asks for.
fn ek_policy_session(ctx: &mut Context) -> Result<AuthSession, TpmError> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(cmd("start policy session"))?
        .ok_or(TpmError::Invalid {
            what: "policy session",
            reason: "the tpm returned no session".to_owned(),
        })?;
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    let configured = ctx
        .tr_sess_set_attributes(session, attrs, mask)
        .map_err(cmd("set session attributes"))
        .and_then(|()| {
            let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            ctx.execute_with_nullauth_session(|ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(cmd("policy secret"))
        });
    match configured {
        Ok(_) => Ok(session),
        Err(e) => {
            let _ = flush_session(ctx, session);
            Err(e)
        }
    }
}

pub(crate) fn flush_session(ctx: &mut Context, session: AuthSession) -> Result<(), TpmError> {
    ctx.flush_context(SessionHandle::from(session).into())
        .map_err(cmd("flush session"))
}

pub(crate) fn marshal_public(public: Public) -> Result<Vec<u8>, TpmError> {
    PublicBuffer::try_from(public)
        .and_then(|b| b.marshall())
        .map_err(cmd("marshal public area"))
}

pub(crate) fn unmarshal_public(bytes: &[u8]) -> Result<Public, TpmError> {
    PublicBuffer::unmarshall(bytes)
        .and_then(Public::try_from)
        .map_err(|e| TpmError::Invalid {
            what: "public area",
            reason: e.to_string(),
        })
}

/// Accepts either TPM2B contents or a full TPM2B (2-byte big-endian size then exactly that
/// many bytes).
fn strip_tpm2b(bytes: &[u8]) -> &[u8] {
    if let [hi, lo, rest @ ..] = bytes
        && usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len()
    {
        return rest;
    }
    bytes
}

/// NV certificate areas may be larger than the certificate; keep the outer DER element only.
fn trim_der(mut der: Vec<u8>) -> Vec<u8> {
    let len = match der.as_slice() {
        [0x30, 0x82, a, b, ..] => Some(4 + usize::from(u16::from_be_bytes([*a, *b]))),
        [0x30, 0x81, a, ..] => Some(3 + usize::from(*a)),
        [0x30, a, ..] if *a < 0x80 => Some(2 + usize::from(*a)),
        _ => None,
    };
    if let Some(len) = len
        && len <= der.len()
    {
        der.truncate(len);
    }
    der
}

pub(crate) fn pcr_slots(pcrs: &[u32]) -> Result<Vec<PcrSlot>, TpmError> {
    if pcrs.is_empty() {
        return Err(TpmError::Invalid {
            what: "pcr selection",
            reason: "no pcrs selected".to_owned(),
        });
    }
    pcrs.iter()
        .map(|&i| {
            if i > MAX_PCR {
                return Err(TpmError::Invalid {
                    what: "pcr index",
                    reason: format!("{i} is above {MAX_PCR}"),
                });
            }
            PcrSlot::try_from(1u32 << i).map_err(cmd("pcr slot"))
        })
        .collect()
}

fn pcr_handle(pcr: u32) -> Result<PcrHandle, TpmError> {
    const HANDLES: [PcrHandle; 24] = [
        PcrHandle::Pcr0,
        PcrHandle::Pcr1,
        PcrHandle::Pcr2,
        PcrHandle::Pcr3,
        PcrHandle::Pcr4,
        PcrHandle::Pcr5,
        PcrHandle::Pcr6,
        PcrHandle::Pcr7,
        PcrHandle::Pcr8,
        PcrHandle::Pcr9,
        PcrHandle::Pcr10,
        PcrHandle::Pcr11,
        PcrHandle::Pcr12,
        PcrHandle::Pcr13,
        PcrHandle::Pcr14,
        PcrHandle::Pcr15,
        PcrHandle::Pcr16,
        PcrHandle::Pcr17,
        PcrHandle::Pcr18,
        PcrHandle::Pcr19,
        PcrHandle::Pcr20,
        PcrHandle::Pcr21,
        PcrHandle::Pcr22,
        PcrHandle::Pcr23,
    ];
    usize::try_from(pcr)
        .ok()
        .and_then(|i| HANDLES.get(i).copied())
        .ok_or_else(|| TpmError::Invalid {
            what: "pcr index",
            reason: format!("{pcr} is above {MAX_PCR}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_tpm2b_only_strips_a_matching_size() {
        assert_eq!(strip_tpm2b(&[0, 2, 7, 8]), &[7, 8]);
        assert_eq!(strip_tpm2b(&[0, 3, 7, 8]), &[0, 3, 7, 8]);
        assert_eq!(strip_tpm2b(&[1]), &[1]);
    }

    #[test]
    fn trim_der_drops_nv_padding() {
        assert_eq!(
            trim_der(vec![0x30, 2, 1, 2, 0xff, 0xff]),
            vec![0x30, 2, 1, 2]
        );
        assert_eq!(trim_der(vec![0x31, 2]), vec![0x31, 2]);
    }

    #[test]
    fn pcr_indices_are_checked() {
        assert!(pcr_handle(23).is_ok());
        assert!(pcr_handle(24).is_err());
        assert!(pcr_slots(&[]).is_err());
        assert!(pcr_slots(&[0, 7, 23]).is_ok());
    }
}
