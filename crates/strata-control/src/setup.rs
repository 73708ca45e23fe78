//! First start and every start: the data directory, its files and their modes.
//!
//! ```text
//! DATA_DIR/
//!   strata.db            SQLite store (embedded default)
//!   root.key      0600   root key: seals signing keys and TOTP secrets stored in the database,
//!                        and is the root of the key hierarchy (strata-kms), or instead:
//!   root.key.sealed 0600 the same key sealed to this host's TPM (strata_agent::rootseal,
//!                        chosen by strata-cli's --root-key; see docs/security.md)
//!   audit.pub            the audit log's checkpoint public key (pin it somewhere safe)
//!   tls/ca.pem, tls/ca.key (0600), tls/server.pem, tls/server.key (0600)
//!   admin-profile.json 0600   endpoint, CA, bootstrap admin credentials
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_kms::provider::{ROOT_KEY_FILE, SEALED_ROOT_KEY_FILE};
use strata_kms::{FileRootKey, RootKeyProvider};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store")]
    Store(#[from] strata_store::StoreError),
    #[error("sealed key material")]
    Seal(#[from] crate::crypto::SealError),
    #[error("the root key")]
    RootKey(#[from] strata_kms::ProviderError),
}

impl SetupError {
    pub fn io(path: &Path, source: impl Into<std::io::Error>) -> Self {
        SetupError::Io {
            path: path.display().to_string(),
            source: source.into(),
        }
    }
    pub fn tls(e: impl std::fmt::Display) -> Self {
        SetupError::Tls(e.to_string())
    }
}

pub fn read_file(path: &Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|e| SetupError::io(path, e))
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SetupError> {
    let tmp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| SetupError::io(&tmp, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| SetupError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| SetupError::io(&tmp, e))?;
    f.sync_all().map_err(|e| SetupError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SetupError::io(path, e))?;
    Ok(())
}

/// Writes a secret file atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    write_mode(path, bytes, 0o600)
}

/// Writes a non-secret file atomically with mode 0644.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    write_mode(path, bytes, 0o644)
}

/// Creates the data directory (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(dir).map_err(|e| SetupError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| SetupError::io(dir, e))
}

/// Where the root key comes from. The default is `DATA_DIR/root.key` (a 0600 file, with a
/// warning on every start); `strata-cli` passes a TPM-sealed provider
/// (`strata_agent::rootseal`) when the host has a usable TPM or `--root-key tpm` is given.
#[derive(Clone, Default)]
pub struct RootKeySource(Option<Arc<dyn RootKeyProvider + Send + Sync>>);

impl RootKeySource {
    pub fn provider(provider: Arc<dyn RootKeyProvider + Send + Sync>) -> Self {
        RootKeySource(Some(provider))
    }
}

impl std::fmt::Debug for RootKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "RootKeySource({})", p.describe()),
            None => f.write_str("RootKeySource(file in the data directory)"),
        }
    }
}

/// Loads the root key, creating it on first start; logs the provider's security warning (a
/// file-backed key) on every start.
pub fn root_key(dir: &Path, source: &RootKeySource) -> Result<crate::crypto::RootKey, SetupError> {
    let provider: Arc<dyn RootKeyProvider + Send + Sync> = match &source.0 {
        Some(p) => p.clone(),
        None => {
            // Never answer a sealed key with a new file key: that would orphan every secret.
            if dir.join(SEALED_ROOT_KEY_FILE).exists() && !dir.join(ROOT_KEY_FILE).exists() {
                return Err(SetupError::Invalid(format!(
                    "the root key of {} is sealed to a TPM ({SEALED_ROOT_KEY_FILE}); start with `--root-key tpm` on the host that holds that TPM",
                    dir.display()
                )));
            }
            Arc::new(FileRootKey::in_data_dir(dir))
        }
    };
    let loaded = provider.load_or_create()?;
    if let Some(w) = &loaded.warning {
        tracing::warn!(code = w.code, "{}", w.message);
    }
    if loaded.created {
        tracing::info!(provider = %provider.describe(), "created a new root key");
    } else {
        tracing::info!(provider = %provider.describe(), "loaded the root key");
    }
    Ok(crate::crypto::RootKey::from_bytes(
        loaded.secret.expose_secret(),
    )?)
}
