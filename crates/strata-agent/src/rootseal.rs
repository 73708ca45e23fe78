//! The control plane's root key sealed to the control-plane host's TPM.
//!
//! The TPM stack (`tss-esapi`) is linked by this crate only; the control plane (which has no
//! TPM code) receives a `strata_kms::RootKeyProvider` from `strata-cli` (`strata server` /
//! `strata up` with `--root-key auto|tpm|file`), built here by [`prepare`].
//!
//! ```text
//! seal:    CreatePrimary(owner hierarchy, ECC P-256 storage template)       ── transient, flushed
//!          StartAuthSession(HMAC, salted to that primary, AES-128-CFB)     ── the 32 bytes cross
//!          Create(KEYEDHASH sealed-data object, sensitive = root secret)      the bus encrypted
//!          → root.key.sealed (0600) = {format, pcrs, TPM2B_PUBLIC, TPM2B_PRIVATE}
//! unseal:  CreatePrimary (same template: the same key, derived from the owner seed)
//!          Load(public, private)           ── integrity-checked under this TPM's storage seed:
//!                                             another TPM (or a cleared one) refuses the blob
//!          [PolicyPCR over the blob's PCRs, when sealed with --root-key-pcrs]
//!          Unseal in a salted session with response encryption
//! ```
//!
//! What a copy of the data directory gives an attacker: `root.key.sealed` is encrypted and
//! integrity-protected by a key that never leaves this TPM (the private part of the storage
//! primary), so without this TPM it opens nothing. The sealed object has `userWithAuth` and an
//! empty password by default — anyone with root on this machine (who can also read the
//! control plane's memory) can unseal it, which is the point: the control plane starts
//! unattended.
//!
//! PCR binding (`--root-key-pcrs 7`, SHA-256 bank) is opt-in: the object then has
//! `userWithAuth` clear and a `TPM2_PolicyPCR` policy over the PCR values at sealing time, so
//! booting another OS or changing the secure-boot configuration on this same machine also
//! refuses it — and so does a firmware or secure-boot database (dbx) update, until the key is
//! re-sealed from a recovery copy. The default is unbound because a control plane that cannot
//! start after a routine update is an outage, and the threat this addresses first is a copied
//! disk or backup. Recovery (a dead or cleared TPM, a replaced board, PCRs that moved): keep an
//! offline copy made with `strata root-key export`, put it back as `DATA_DIR/root.key` (0600),
//! move the dead `root.key.sealed` away and start with `--root-key tpm`: the copy is sealed to
//! the new TPM and removed from the data directory. See docs/security.md.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use strata_kms::provider::{ROOT_KEY_FILE, SEALED_ROOT_KEY_FILE, SealerError};
use strata_kms::{
    FileRootKey, ProviderError, RootKeyProvider, RootKeySealer, RootSecret, SealedFileRootKey,
};
use tss_esapi::{
    Context,
    attributes::{ObjectAttributesBuilder, SessionAttributesBuilder},
    constants::SessionType,
    handles::{KeyHandle, ObjectHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, PublicAlgorithm},
        ecc::EccCurve,
        resource_handles::Hierarchy,
        session_handles::{AuthSession, PolicySession},
    },
    structures::{
        Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, Private,
        Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters,
        SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
    },
};
use zeroize::Zeroizing;

use crate::tpm::{
    MAX_PCR, Tpm, TpmError, cmd, flush_session, marshal_public, pcr_slots, unmarshal_public,
};

/// The TCTI of the host's TPM through the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// The sealed blob's format tag.
pub const FORMAT: &str = "strata-tpm-sealed-v1";
/// The parent every blob is sealed under (see [`storage_primary_template`]).
pub const PARENT: &str = "owner/ecc-p256-storage-primary";

/// `root.key.sealed`: JSON, so an operator can see what it is bound to without the TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SealedBlob {
    pub format: String,
    pub parent: String,
    /// SHA-256 PCRs the object's policy covers (empty: no PCR policy).
    #[serde(default)]
    pub pcrs: Vec<u32>,
    /// Marshalled `TPM2B_PUBLIC` of the sealed data object (base64).
    pub public: String,
    /// `TPM2B_PRIVATE` contents (base64): encrypted under the storage primary.
    pub private: String,
}

impl SealedBlob {
    /// Parses a blob without touching a TPM (for `strata root-key status`).
    pub fn parse(bytes: &[u8]) -> Result<SealedBlob, TpmError> {
        let blob: SealedBlob = serde_json::from_slice(bytes).map_err(|e| TpmError::Invalid {
            what: "sealed root key",
            reason: format!("not a sealed blob: {e}"),
        })?;
        if blob.format != FORMAT || blob.parent != PARENT {
            return Err(TpmError::Invalid {
                what: "sealed root key",
                reason: format!(
                    "format {:?} under {:?}; this build reads {FORMAT:?} under {PARENT:?}",
                    blob.format, blob.parent
                ),
            });
        }
        Ok(blob)
    }
}

/// Seals and unseals the root secret with the TPM behind a TCTI string, optionally bound to
/// SHA-256 PCRs. Opens the TPM for each call and leaves nothing loaded in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmSealer {
    tcti: String,
    pcrs: Vec<u32>,
}

impl TpmSealer {
    /// `pcrs` (SHA-256 bank, 0–23) bind newly sealed blobs to the PCR values at sealing time;
    /// empty for no PCR policy. Unsealing follows what each blob records.
    pub fn new(tcti: impl Into<String>, pcrs: &[u32]) -> Result<TpmSealer, TpmError> {
        let mut pcrs = pcrs.to_vec();
        pcrs.sort_unstable();
        pcrs.dedup();
        if let Some(bad) = pcrs.iter().find(|p| **p > MAX_PCR) {
            return Err(TpmError::Invalid {
                what: "pcr index",
                reason: format!("{bad} is above {MAX_PCR}"),
            });
        }
        Ok(TpmSealer {
            tcti: tcti.into(),
            pcrs,
        })
    }

    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    pub fn pcrs(&self) -> &[u32] {
        &self.pcrs
    }

    /// Whether the TPM can be used for sealing: it opens, and the owner hierarchy gives the
    /// storage primary (an owner password set by another OS makes this fail).
    pub fn probe(&self) -> Result<(), TpmError> {
        if let Some(device) = self.tcti.strip_prefix("device:")
            && !Path::new(device).exists()
        {
            return Err(TpmError::Invalid {
                what: "tpm device",
                reason: format!("{device} does not exist"),
            });
        }
        let mut tpm = Tpm::open(&self.tcti)?;
        with_primary(tpm.context(), |_, _| Ok(()))
    }

    /// Seals `secret` (at most 128 bytes) and returns the blob to store.
    pub fn seal_bytes(&self, secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut tpm = Tpm::open(&self.tcti)?;
        let pcrs = self.pcrs.clone();
        let (public, private) = with_primary(tpm.context(), |ctx, primary| {
            seal_under(ctx, primary, secret, &pcrs)
        })?;
        let blob = SealedBlob {
            format: FORMAT.to_owned(),
            parent: PARENT.to_owned(),
            pcrs: self.pcrs.clone(),
            public: B64.encode(marshal_public(public)?),
            private: B64.encode(private.value()),
        };
        serde_json::to_vec_pretty(&blob).map_err(|e| TpmError::Invalid {
            what: "sealed root key",
            reason: e.to_string(),
        })
    }

    /// Unseals a blob from [`TpmSealer::seal_bytes`] with this TPM.
    pub fn unseal_bytes(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let blob = SealedBlob::parse(blob)?;
        let invalid = |reason: String| TpmError::Invalid {
            what: "sealed root key",
            reason,
        };
        let public = B64
            .decode(&blob.public)
            .map_err(|e| invalid(e.to_string()))
            .and_then(|b| unmarshal_public(&b))?;
        let private = B64
            .decode(&blob.private)
            .map_err(|e| invalid(e.to_string()))
            .and_then(|b| Private::try_from(b).map_err(|e| invalid(e.to_string())))?;
        let mut tpm = Tpm::open(&self.tcti)?;
        with_primary(tpm.context(), |ctx, primary| {
            unseal_under(ctx, primary, public, private, &blob.pcrs)
        })
    }
}

impl RootKeySealer for TpmSealer {
    fn describe(&self) -> String {
        if self.pcrs.is_empty() {
            format!("tpm {}", self.tcti)
        } else {
            format!("tpm {} bound to sha256 pcrs {:?}", self.tcti, self.pcrs)
        }
    }

    fn seal(&self, secret: &RootSecret) -> Result<Vec<u8>, SealerError> {
        Ok(self.seal_bytes(secret.expose_secret())?)
    }

    fn unseal(&self, blob: &[u8]) -> Result<RootSecret, SealerError> {
        let bytes = self.unseal_bytes(blob)?;
        Ok(RootSecret::from_bytes(&bytes)?)
    }
}

/// The owner hierarchy's storage primary: ECC P-256, restricted decryption, AES-128-CFB for
/// its children (the TCG provisioning guidance's SRK shape). Derived from the owner seed, so
/// the same template gives the same key on every start and a different one on another TPM.
fn storage_primary_template() -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(cmd("storage primary attributes"))?;
    let parameters = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(cmd("storage primary parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("storage primary template"))
}

/// A sealed data object: KEYEDHASH with a null scheme, the data supplied by the caller.
/// Without a policy, usable with its (empty) password; with one, only through the policy.
fn sealed_object_template(policy: Option<Digest>) -> Result<Public, TpmError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(policy.is_none())
        .build()
        .map_err(cmd("sealed object attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy.unwrap_or_default())
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(cmd("sealed object template"))
}

/// Creates the storage primary, runs `f`, and flushes the primary whatever `f` returned.
fn with_primary<T>(
    ctx: &mut Context,
    f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let template = storage_primary_template()?;
    let primary = ctx
        .execute_with_nullauth_session(|ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(cmd(
            "create the storage primary (is an owner password set on this tpm?)",
        ))?
        .key_handle;
    let out = f(ctx, primary);
    let flushed = ctx
        .flush_context(ObjectHandle::from(primary))
        .map_err(cmd("flush the storage primary"));
    let out = out?;
    flushed?;
    Ok(out)
}

fn selection(pcrs: &[u32]) -> Result<PcrSelectionList, TpmError> {
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &pcr_slots(pcrs)?)
        .build()
        .map_err(cmd("build pcr selection"))
}

/// A session salted to `primary` (so its session key is unknown to anyone watching the bus),
/// with parameter encryption of the command (`decrypt`) or of the response (`encrypt`).
fn salted_session(
    ctx: &mut Context,
    primary: KeyHandle,
    kind: SessionType,
    decrypt: bool,
    encrypt: bool,
) -> Result<AuthSession, TpmError> {
    let session = ctx
        .execute_without_session(|ctx| {
            ctx.start_auth_session(
                Some(primary),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
        })
        .map_err(cmd("start salted session"))?
        .ok_or(TpmError::Invalid {
            what: "session",
            reason: "the tpm returned no session".to_owned(),
        })?;
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_decrypt(decrypt)
        .with_encrypt(encrypt)
        .build();
    if let Err(e) = ctx.tr_sess_set_attributes(session, attributes, mask) {
        let _ = flush_session(ctx, session);
        return Err(cmd("set session attributes")(e));
    }
    Ok(session)
}

/// The policy digest of `TPM2_PolicyPCR` over the current values of `pcrs` (a trial session).
fn pcr_policy_digest(ctx: &mut Context, pcrs: &[u32]) -> Result<Digest, TpmError> {
    let selection = selection(pcrs)?;
    let session = ctx
        .execute_without_session(|ctx| {
            ctx.start_auth_session(
                None,
                None,
                None,
                SessionType::Trial,
                SymmetricDefinition::Null,
                HashingAlgorithm::Sha256,
            )
        })
        .map_err(cmd("start trial session"))?
        .ok_or(TpmError::Invalid {
            what: "session",
            reason: "the tpm returned no session".to_owned(),
        })?;
    let digest = PolicySession::try_from(session)
        .map_err(cmd("trial session"))
        .and_then(|policy| {
            ctx.execute_without_session(|ctx| {
                ctx.policy_pcr(policy, Digest::default(), selection)?;
                ctx.policy_get_digest(policy)
            })
            .map_err(cmd("compute the pcr policy"))
        });
    let flushed = flush_session(ctx, session);
    let digest = digest?;
    flushed?;
    Ok(digest)
}

fn seal_under(
    ctx: &mut Context,
    primary: KeyHandle,
    secret: &[u8],
    pcrs: &[u32],
) -> Result<(Public, Private), TpmError> {
    let policy = if pcrs.is_empty() {
        None
    } else {
        Some(pcr_policy_digest(ctx, pcrs)?)
    };
    let template = sealed_object_template(policy)?;
    let data = SensitiveData::try_from(secret.to_vec()).map_err(|e| TpmError::Invalid {
        what: "secret to seal",
        reason: e.to_string(),
    })?;
    // The sensitive data is the command's first parameter: encrypted on the bus.
    let session = salted_session(ctx, primary, SessionType::Hmac, true, false)?;
    let created = ctx.execute_with_session(Some(session), |ctx| {
        ctx.create(primary, template, None, Some(data), None, None)
    });
    let flushed = flush_session(ctx, session);
    let created = created.map_err(cmd("create the sealed object"))?;
    flushed?;
    Ok((created.out_public, created.out_private))
}

fn unseal_under(
    ctx: &mut Context,
    primary: KeyHandle,
    public: Public,
    private: Private,
    pcrs: &[u32],
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let object = ctx
        .execute_with_nullauth_session(|ctx| ctx.load(primary, private, public))
        .map_err(cmd(
            "load the sealed root key (was it sealed by another tpm, or was this tpm cleared?)",
        ))?;
    let out = unseal_loaded(ctx, primary, object, pcrs);
    let flushed = ctx
        .flush_context(ObjectHandle::from(object))
        .map_err(cmd("flush the sealed object"));
    let out = out?;
    flushed?;
    Ok(out)
}

fn unseal_loaded(
    ctx: &mut Context,
    primary: KeyHandle,
    object: KeyHandle,
    pcrs: &[u32],
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    // The secret is the response's first parameter: encrypted on the bus.
    let session = if pcrs.is_empty() {
        salted_session(ctx, primary, SessionType::Hmac, false, true)?
    } else {
        let session = salted_session(ctx, primary, SessionType::Policy, false, true)?;
        let satisfied = selection(pcrs).and_then(|selection| {
            let policy = PolicySession::try_from(session).map_err(cmd("policy session"))?;
            ctx.execute_without_session(|ctx| ctx.policy_pcr(policy, Digest::default(), selection))
                .map_err(cmd("policy pcr"))
        });
        if let Err(e) = satisfied {
            let _ = flush_session(ctx, session);
            return Err(e);
        }
        session
    };
    let data =
        ctx.execute_with_session(Some(session), |ctx| ctx.unseal(ObjectHandle::from(object)));
    let flushed = flush_session(ctx, session);
    let data = data.map_err(cmd(if pcrs.is_empty() {
        "unseal"
    } else {
        "unseal (the pcr policy fails if the boot or the secure-boot configuration changed since sealing)"
    }))?;
    flushed?;
    Ok(Zeroizing::new(data.value().to_vec()))
}

// ---- choosing the root key provider ---------------------------------------------------------

/// `--root-key`: where the control plane's root key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKeyMode {
    /// A sealed key if the data directory has one; else a file key if it has one; else a new
    /// key sealed to the TPM when one is usable, a file otherwise.
    Auto,
    /// Sealed to the TPM; migrates an existing `root.key` (and removes the plain copy).
    Tpm,
    /// A plain 0600 file (with a warning on every start).
    File,
}

/// `--root-key`, `--root-key-tcti`, `--root-key-pcrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeyOptions {
    pub mode: RootKeyMode,
    pub tcti: String,
    /// SHA-256 PCRs newly sealed keys are bound to (empty: none).
    pub pcrs: Vec<u32>,
}

impl Default for RootKeyOptions {
    fn default() -> Self {
        RootKeyOptions {
            mode: RootKeyMode::Auto,
            tcti: DEFAULT_TCTI.to_owned(),
            pcrs: Vec::new(),
        }
    }
}

/// The provider to start the control plane with, and what was decided, for the log.
pub struct PreparedRootKey {
    pub provider: Arc<dyn RootKeyProvider + Send + Sync>,
    /// `true` for the TPM-sealed provider.
    pub sealed: bool,
    pub notes: Vec<String>,
}

impl std::fmt::Debug for PreparedRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRootKey")
            .field("provider", &self.provider.describe())
            .field("notes", &self.notes)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootSealError {
    #[error("cannot use the tpm at {tcti} for the root key")]
    Tpm {
        tcti: String,
        #[source]
        source: TpmError,
    },
    #[error("root key")]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    Refused(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootSealError + '_ {
    move |source| RootSealError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, RootSealError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

/// Decides where the root key of `data_dir` comes from (see [`RootKeyMode`]) and migrates a
/// plain `root.key` into the TPM when asked to. Blocking (TPM commands).
///
/// A data directory whose key is sealed never falls back to a file: if the TPM cannot be
/// used, this fails and says so (starting with a new key would orphan every sealed secret).
pub fn prepare(data_dir: &Path, opts: &RootKeyOptions) -> Result<PreparedRootKey, RootSealError> {
    let plain = data_dir.join(ROOT_KEY_FILE);
    let sealed = data_dir.join(SEALED_ROOT_KEY_FILE);
    let (has_plain, has_sealed) = (exists(&plain)?, exists(&sealed)?);
    let sealer = TpmSealer::new(&opts.tcti, &opts.pcrs).map_err(|source| RootSealError::Tpm {
        tcti: opts.tcti.clone(),
        source,
    })?;
    let file = || PreparedRootKey {
        provider: Arc::new(FileRootKey::new(&plain)),
        sealed: false,
        notes: Vec::new(),
    };
    match opts.mode {
        RootKeyMode::File if has_sealed => Err(RootSealError::Refused(format!(
            "the root key of {} is sealed to a TPM ({}); start with --root-key tpm (or auto), or make a file copy with `strata root-key export` on the host that holds that TPM",
            data_dir.display(),
            sealed.display()
        ))),
        RootKeyMode::File => Ok(file()),
        RootKeyMode::Tpm => seal_to_tpm(data_dir, sealer, has_plain, has_sealed),
        RootKeyMode::Auto if has_sealed => seal_to_tpm(data_dir, sealer, has_plain, has_sealed),
        RootKeyMode::Auto => {
            let usable = sealer.probe();
            match (has_plain, usable) {
                (true, Ok(())) => {
                    let mut f = file();
                    f.notes.push(format!(
                        "a TPM is usable at {}: start once with --root-key tpm to seal {} to it (keep an offline copy of the file first: a sealed key dies with its TPM)",
                        opts.tcti,
                        plain.display()
                    ));
                    Ok(f)
                }
                (true, Err(_)) => Ok(file()),
                (false, Ok(())) => {
                    let mut prepared = seal_to_tpm(data_dir, sealer, false, false)?;
                    prepared.notes.push(format!(
                        "the root key is sealed to the TPM at {}; make an offline recovery copy now with `strata root-key export --data-dir {} --out FILE` (a sealed key dies with its TPM)",
                        opts.tcti,
                        data_dir.display()
                    ));
                    Ok(prepared)
                }
                (false, Err(e)) => {
                    let mut f = file();
                    f.notes.push(format!(
                        "no usable TPM at {} ({}); the root key is kept in a file",
                        opts.tcti,
                        crate_chain(&e)
                    ));
                    Ok(f)
                }
            }
        }
    }
}

fn seal_to_tpm(
    data_dir: &Path,
    sealer: TpmSealer,
    has_plain: bool,
    has_sealed: bool,
) -> Result<PreparedRootKey, RootSealError> {
    let plain = data_dir.join(ROOT_KEY_FILE);
    let sealed_path = data_dir.join(SEALED_ROOT_KEY_FILE);
    let tcti = sealer.tcti().to_owned();
    sealer.probe().map_err(|source| RootSealError::Tpm {
        tcti: tcti.clone(),
        source,
    })?;
    let provider = SealedFileRootKey::new(&sealed_path, sealer);
    let mut notes = Vec::new();
    if has_plain {
        let from_file = FileRootKey::new(&plain).load_or_create()?;
        if has_sealed {
            let from_tpm = provider.load_or_create().map_err(|e| {
                RootSealError::Refused(format!(
                    "{} exists beside {}, and the sealed key does not unseal ({}): if this TPM is new and {} is your recovery copy, move {} away and start again",
                    plain.display(),
                    sealed_path.display(),
                    crate_chain(&e),
                    plain.display(),
                    sealed_path.display()
                ))
            })?;
            if from_tpm.secret.expose_secret() != from_file.secret.expose_secret() {
                return Err(RootSealError::Refused(format!(
                    "{} and {} hold different root keys; keep the one this database was created with and move the other away",
                    plain.display(),
                    sealed_path.display()
                )));
            }
            notes.push(format!(
                "finished sealing the root key to the TPM at {tcti}: removed the plain copy {}",
                plain.display()
            ));
        } else {
            provider.import(&from_file.secret)?;
            let check = provider.load_or_create();
            let same = check
                .as_ref()
                .is_ok_and(|c| c.secret.expose_secret() == from_file.secret.expose_secret());
            if !same {
                let _ = std::fs::remove_file(&sealed_path);
                return Err(match check {
                    Err(e) => RootSealError::Provider(e),
                    Ok(_) => RootSealError::Refused(
                        "the TPM unsealed a different key than it was given; nothing was changed"
                            .to_owned(),
                    ),
                });
            }
            notes.push(format!(
                "sealed the root key to the TPM at {tcti} ({}) and removed the plain copy {}; the key itself is unchanged, nothing was rewrapped",
                sealed_path.display(),
                plain.display()
            ));
        }
        destroy(&plain)?;
    }
    Ok(PreparedRootKey {
        provider: Arc::new(provider),
        sealed: true,
        notes,
    })
}

/// Overwrites a plain key file with zeros, syncs, unlinks it and syncs the directory. On
/// copy-on-write or flash storage the old blocks may survive; backups certainly do.
fn destroy(path: &Path) -> Result<(), RootSealError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(64 * 1024)];
    f.write_all(&zeros)
        .and_then(|()| f.sync_all())
        .map_err(io(path))?;
    drop(f);
    std::fs::remove_file(path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn crate_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// What protects a data directory's root key, for `strata root-key status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootKeyStatus {
    /// `tpm-sealed`, `file`, or `none` (not created yet).
    pub protection: &'static str,
    pub path: Option<PathBuf>,
    /// PCRs the sealed key is bound to.
    pub pcrs: Vec<u32>,
    /// A plain copy lies beside the sealed key (an interrupted migration).
    pub plain_copy_present: bool,
    pub tcti: String,
    pub tpm_usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_error: Option<String>,
}

/// Reports what protects the root key of `data_dir`, without unsealing it.
pub fn status(data_dir: &Path, tcti: &str) -> Result<RootKeyStatus, RootSealError> {
    let plain = data_dir.join(ROOT_KEY_FILE);
    let sealed = data_dir.join(SEALED_ROOT_KEY_FILE);
    let probe = TpmSealer::new(tcti, &[]).and_then(|s| s.probe());
    let mut out = RootKeyStatus {
        protection: "none",
        path: None,
        pcrs: Vec::new(),
        plain_copy_present: false,
        tcti: tcti.to_owned(),
        tpm_usable: probe.is_ok(),
        tpm_error: probe.err().map(|e| crate_chain(&e)),
    };
    if exists(&sealed)? {
        let bytes = std::fs::read(&sealed).map_err(io(&sealed))?;
        let blob = SealedBlob::parse(&bytes).map_err(|source| RootSealError::Tpm {
            tcti: tcti.to_owned(),
            source,
        })?;
        out.protection = "tpm-sealed";
        out.path = Some(sealed);
        out.pcrs = blob.pcrs;
        out.plain_copy_present = exists(&plain)?;
    } else if exists(&plain)? {
        out.protection = "file";
        out.path = Some(plain);
    }
    Ok(out)
}

/// Writes the root secret of `data_dir` to `out` (a new 0600 file) for offline escrow: the
/// recovery copy for when the TPM dies. Unseals with the TPM at `tcti` if the key is sealed.
pub fn export(data_dir: &Path, tcti: &str, out: &Path) -> Result<(), RootSealError> {
    let sealed = data_dir.join(SEALED_ROOT_KEY_FILE);
    let plain = data_dir.join(ROOT_KEY_FILE);
    let loaded = if exists(&sealed)? {
        let sealer = TpmSealer::new(tcti, &[]).map_err(|source| RootSealError::Tpm {
            tcti: tcti.to_owned(),
            source,
        })?;
        SealedFileRootKey::new(&sealed, sealer).load_or_create()?
    } else if exists(&plain)? {
        FileRootKey::new(&plain).load_or_create()?
    } else {
        return Err(RootSealError::Refused(format!(
            "{} has no root key (neither {SEALED_ROOT_KEY_FILE} nor {ROOT_KEY_FILE})",
            data_dir.display()
        )));
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io(out))?;
    f.write_all(loaded.secret.expose_secret())
        .and_then(|()| f.sync_all())
        .map_err(io(out))
}
